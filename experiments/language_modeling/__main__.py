"""`python -m experiments.language_modeling`: the task's command line (see `experiments.language_modeling.train`)."""

from experiments.language_modeling.train import main

if __name__ == "__main__":
    main()
