"""Training: caption tokenisation (Transform), the Show-and-Tell model, its Trainer and export."""
