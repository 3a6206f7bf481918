"""shoprec: a recommendation system for online shops.

The core library is plain Python: it never imports Prefect, and nothing happens at
import time. Prefect tasks (``tasks/``) and flows (``flows/``) wrap these functions.
"""

__version__ = "0.1.0"
