"""`python -m experiments.captioning`: the task's command line (see `experiments.captioning.train`)."""

from experiments.captioning.train import main

if __name__ == "__main__":
    main()
