"""`python -m experiments.forecasting`: the task's command line (see `experiments.forecasting.train`)."""

from experiments.forecasting.train import main

if __name__ == "__main__":
    main()
