"""Trains like ``train_helpers.py``, but blocks forever inside the save of step
$ILA_TEST_BLOCK_SAVE_AT, after the sharded tensors are written and before the checkpoint is
marked complete, and touches $ILA_TEST_BLOCK_FLAG: the test then SIGKILLs it mid-save."""
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import train_helpers  # noqa: E402

from ila_fast.train import checkpoint  # noqa: E402

BLOCK_AT = int(os.environ["ILA_TEST_BLOCK_SAVE_AT"])
real_write = checkpoint._write_file


def blocking_write(path: Path, text: str) -> None:
    if path.name == "trainer.json" and path.parent.name == f".tmp_step_{BLOCK_AT:08d}":
        Path(os.environ["ILA_TEST_BLOCK_FLAG"]).touch()
        while True:
            time.sleep(1)
    real_write(path, text)


checkpoint._write_file = blocking_write
sys.exit(train_helpers.main(sys.argv[1:]))
