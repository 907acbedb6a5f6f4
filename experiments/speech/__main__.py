"""`python -m experiments.speech`: the task's command line (see `experiments.speech.train`)."""

from experiments.speech.train import main

if __name__ == "__main__":
    main()
