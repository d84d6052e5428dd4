"""Stage 02: supervised fine-tuning with TRL's SFTTrainer, its training log and learning curve."""
