"""How good a model is, from its answers: scores on a split (``scores``), every metric of them (``metrics``),
calibration, the corruptions of CIFAR-10-C and accuracy under them (``robustness``). Pure functions of a model
and a loader: the training loop validates with them, the commands after training score finished runs with them."""
