"""Time bounds shared by the trainer-level tests (generous: the CI machine has 2 cores)."""

# Python imports + Ray start + worker start + model load of one trainer process.
TRAINER_STARTUP_S = 240.0
