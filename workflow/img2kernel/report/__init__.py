"""What people read: the figures, the kernel comparison table and results/report.html."""
