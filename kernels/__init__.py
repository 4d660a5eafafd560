"""Triton kernels, one file per op family. They know nothing about models; `fastformers.ops` calls them."""
