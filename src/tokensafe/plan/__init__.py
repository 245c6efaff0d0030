"""What a config asks the machines to do, computed before any job: the training stages and their optimiser steps."""
