"""The runner's Jupyter kernels: encrypted transport, and their process output kept in a log file.

A notebook's cells print into the notebook (ipykernel sends their output over the wire, and while a
cell runs it also forwards what the process writes to its file descriptors 1 and 2, echoing it to
the process's original descriptors). What the kernel *process* writes outside that is something
else: C libraries' messages at start-up and shut-down (in a good run, noise such as libzmq's
``Assertion failed: pfd.revents & POLLIN (src/signaler.cpp:238)``, printed at random when a
kernel's sockets close, seen on CI), and in a bad run what it said before it died. By default a
kernel inherits the runner's terminal, so all of it lands between the runner's progress lines. The
runner's kernels write it into a log file next to the executed notebook instead
(:class:`LoggedKernelManager`); the runner removes an empty log, records a non-empty one in its
manifest and quotes its last lines when the kernel dies.

This module imports jupyter_client: import it lazily (only the runner needs it).
"""

from __future__ import annotations

from typing import Any

import zmq
from jupyter_client.manager import AsyncKernelManager, KernelManager
from traitlets import Unicode
from traitlets.config import Config

__all__ = ["LoggedKernelManager", "kernel_config"]


class LoggedKernelManager(AsyncKernelManager):
    """A kernel manager whose kernel process writes its stdout and stderr to ``log_file``.

    The file is opened in append mode, so a log is never overwritten; the kernel's descriptors are
    duplicates, so the manager closes its own handle as soon as the kernel has started.
    """

    log_file = Unicode("", help="File that receives the kernel process's stdout and stderr.").tag(config=True)

    async def start_kernel(self, **kw: Any) -> None:  # type: ignore[override]
        """Start the kernel with its stdout and stderr appended to :attr:`log_file`.

        Args:
            **kw: Passed on to :meth:`jupyter_client.manager.AsyncKernelManager.start_kernel`.

        Raises:
            ValueError: :attr:`log_file` is not set.
        """
        if not self.log_file:
            raise ValueError("LoggedKernelManager.log_file is not set: configure the file for the kernel's output")
        with open(self.log_file, "ab") as log:
            await super().start_kernel(stdout=log, stderr=log, **kw)


def kernel_config(log_file: str) -> Config:
    """Configuration of the runner's notebook client and its kernel manager.

    The client's kernels are :class:`LoggedKernelManager` kernels writing into ``log_file``. Where
    possible they use CurveZMQ transport encryption: ipykernel 7 warns at every kernel start that
    "Kernel is running over TCP without encryption" unless the kernel manager provisions CurveZMQ
    keys. With ``transport_encryption = "auto"``, jupyter_client (8.9 and later, which ipykernel 7
    requires) provisions them for kernels whose kernelspec declares ``supported_encryption: curve``,
    as ipykernel 7's does; the warning then has no cause. An older jupyter_client (its ipykernel does
    not warn) would report the setting as unknown, and pyzmq built without CurveZMQ would refuse it:
    neither gets the setting.

    Args:
        log_file: Where the kernel process's own stdout and stderr go.

    Returns:
        The configuration for papermill's notebook client (passed on to its kernel manager).
    """
    manager: dict[str, Any] = {"log_file": log_file}
    if "transport_encryption" in KernelManager.class_trait_names() and zmq.has("curve"):
        manager["transport_encryption"] = "auto"
    return Config({"NotebookClient": {"kernel_manager_class": LoggedKernelManager},
                   "LoggedKernelManager": manager})
