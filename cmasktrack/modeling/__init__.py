"""The network: backbone + FPN, RPN, RoI heads, temporal calibration, track head."""
