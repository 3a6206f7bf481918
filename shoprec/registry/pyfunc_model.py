"""MLflow models-from-code definition of the shoprec pyfunc model.

MLflow logs this file's source with each version; loading runs it. It only names the class
(:mod:`shoprec.registry.served`) of the shoprec that loads it: the installed one where
shoprec is already imported (``shoprec serve``), else the package copy logged with the
version (MLflow puts it first on the path), which then answers with its own code.
"""

import mlflow

from shoprec.registry.served import ShoprecModel

mlflow.models.set_model(ShoprecModel())
