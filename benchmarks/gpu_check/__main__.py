import time

STARTED = time.monotonic()  # before torch is imported: the run's clock counts the imports too

from .main import main  # noqa: E402

raise SystemExit(main(started=STARTED))
