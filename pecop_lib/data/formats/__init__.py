"""Readers of the official on-disk formats: one module per dataset (MTL-AQA, JIGSAWS, FineDiving,
PD4T) plus the Kinetics-style layout of the synthetic domain-general action set."""
