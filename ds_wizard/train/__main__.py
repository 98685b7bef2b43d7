import os
import sys

# before anything initialises CUDA (importing deepspeed asks torch for devices): number the
# GPUs as NVML and `ds-wizard gpus` do, on every node (DeepSpeed's runner forwards only some
# variables to other hosts, so the rank sets it itself; a user's own choice is kept)
os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")

from ds_wizard.train.loop import main

sys.exit(main())
