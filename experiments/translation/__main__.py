"""`python -m experiments.translation`: the task's command line (see `experiments.translation.train`)."""

from experiments.translation.train import main

if __name__ == "__main__":
    main()
