"""bench_configs.py — the benchmark configurations shared by torch_bench.py
and side_by_side.py (plain data, so importing it loads no torch).

name: (H, W, C, nr_resnet, nr_filters, nr_mix, batch)
"""
CONFIGS = {
    "small": (28, 28, 1, 1, 32, 5, 32),      # Fashion-MNIST sized
    "mid": (32, 32, 3, 2, 64, 10, 16),
    "paper": (32, 32, 3, 5, 160, 10, 16),    # the paper's CIFAR-10 model, batch 16 per device
}
