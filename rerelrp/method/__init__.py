"""The ReReLRP method: training, pruning, task recognition, scope, the predictor and the learner."""
