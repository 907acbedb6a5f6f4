"""Sequential MNIST, row by row, pixel by pixel and permuted: the training script (`train`); the data comes from
`experiments.mnist`.

Run it with `python -m experiments.sequential_mnist` (`--help` lists every flag and preset)."""
