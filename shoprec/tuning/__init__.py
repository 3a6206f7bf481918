"""Selection on validation: hyperparameter grids and early stopping.

Model families fit the hyperparameters they are given; when a value is to be chosen (the
regularisation of ALS or EASE, the smoothing of the content model, the number of epochs of
a network), the trainer passes a :class:`ValidationTuner` in the fit context and the family
asks it. The tuner owns the validation data and the scoring: the families never import
:mod:`shoprec.evaluation`.
"""

from shoprec.tuning.validation import (
    EARLY_STOPPING_USERS,
    SELECTION_USERS,
    EarlyStopping,
    ValidationTuner,
)

__all__ = ["EARLY_STOPPING_USERS", "SELECTION_USERS", "EarlyStopping", "ValidationTuner"]
