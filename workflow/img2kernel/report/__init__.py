"""What people read: the figures, the kernel comparison table and results/report.html."""

# The page is at most this many pixels wide: figures are drawn at most this wide, and embedded
# at that size.
SHOWN_WIDTH = 1200
