import os
import sys

# The helpers module sits beside the tests; TOAST warns without OMP_NUM_THREADS.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
