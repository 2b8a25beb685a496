"""TF Serving client, local PredictionService server and deployment files."""
