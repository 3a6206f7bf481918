"""MLflow models-from-code definition of the shoprec pyfunc model.

MLflow logs this file's source with each version; loading runs it. It only names the
installed shoprec's class (:mod:`shoprec.registry.served`), so the code that answers is the
shoprec the server runs (or the package copy logged with the version, where shoprec is not
installed), never a copy frozen in the version.
"""

import mlflow

from shoprec.registry.served import ShoprecModel

mlflow.models.set_model(ShoprecModel())
