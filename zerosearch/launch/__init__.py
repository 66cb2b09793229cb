"""The training launcher behind train_*.sh: named keys, their checks, the memory plan."""
