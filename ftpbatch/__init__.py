"""ftpbatch: an FTP batch gateway for bulk SMS."""

import os

# Set before numpy is first imported (pandas and pyarrow bring it in): the gateway
# does no linear algebra, and OpenBLAS's worker thread, started with numpy, spun
# for 0.1 s of CPU in every process (a tenth of the report helper's start-up, 2 %
# of a 20,000-message `process`). setdefault: an operator's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
