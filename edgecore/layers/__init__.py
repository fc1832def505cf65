"""One module per Keras layer family; registry.py is the one list of supported classes.
A family parses its Keras config, gives shapes and variables, packs its weights and
lowers its calls into plan ops (plan/builder.py)."""
