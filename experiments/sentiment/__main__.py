"""`python -m experiments.sentiment`: the task's command line (see `experiments.sentiment.train`)."""

from experiments.sentiment.train import main

if __name__ == "__main__":
    main()
