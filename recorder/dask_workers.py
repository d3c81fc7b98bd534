"""`mwtap analyze --dask SCHEDULER`: the partitions of `analysis.parallel` computed on a Dask
cluster. It lives on the live side because it talks to the network; `analysis/` stays pure."""

from __future__ import annotations

from analysis.parallel import RunAll


class DaskWorkers:
    def __init__(self, address: str):
        self.address = address

    def __enter__(self) -> RunAll:
        try:
            from distributed import Client
        except ImportError:
            raise RuntimeError("--dask needs dask.distributed (pip install 'mwtap[dask]')") from None
        self.client = Client(self.address, set_as_default=False)
        return lambda fn, tasks: self.client.gather([self.client.submit(fn, *args, pure=False) for args in tasks])

    def __exit__(self, *exc) -> None:
        self.client.close()
