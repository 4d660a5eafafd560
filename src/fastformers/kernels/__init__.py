"""Triton kernels, one file per op family. They know nothing about models; `fastformers.ops` calls them.

Each family file holds the `@triton.jit` kernels, their launchers, and the torch.library custom ops
(namespace ``fastformers::``, with fake implementations and autograd) that `fastformers.ops` registers
as its ``triton`` backend. A function ``<op>_unsupported(*args, **kwargs)`` next to an op returns why a
call cannot run on the kernel (None when it can): `auto` then uses another backend; a forced
``triton`` backend raises with that reason instead.

Importing this package needs the `triton` package; `fastformers.ops` imports it only when the
triton backend is asked for.
"""
