"""`python -m experiments.sequential_mnist`: the task's command line (see `experiments.sequential_mnist.train`)."""

from experiments.sequential_mnist.train import main

if __name__ == "__main__":
    main()
