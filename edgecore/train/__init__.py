"""Training the final layers in place: which layers train and where the frozen prefix
ends (setup.py), the training plan with the loss and the backward pass (program.py),
optimizers and losses with Keras 3's rules, and the fit/evaluate loop (trainer.py).
Imports graph/, plan/ and layers/; never the loader or the model."""
