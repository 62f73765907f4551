"""cwm-toolkit: turn code into training signal for a code world model, and train that model."""
