"""kd-harness: batch experiments for knowledge distillation on CIFAR-10 (see README.md)."""
