"""sdac: compile quantized Stable Diffusion UNets for SDA-style FPGA accelerators."""
__version__ = "0.1.0"
