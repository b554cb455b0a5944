"""The compiled extension var_fast._C: loading it (extension) and its fake kernels for torch.compile (fake_kernels)."""
