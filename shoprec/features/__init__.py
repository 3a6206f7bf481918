"""Features: id maps, weighted CSR interaction matrices, item text frames."""

from shoprec.features.encoding import EncodedSplit, encode_split
from shoprec.features.idmap import IdMap
from shoprec.features.items import item_frame
from shoprec.features.matrix import event_weights, interaction_matrix

__all__ = ["EncodedSplit", "IdMap", "encode_split", "event_weights", "interaction_matrix",
           "item_frame"]
