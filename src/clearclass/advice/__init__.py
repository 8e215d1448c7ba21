"""What to fix in your data (issue 23, in progress): the trained network's features for
every photo of a run (`features.py`) and class probabilities judged out of sample
(`out_of_sample.py`), the ground on which label issues, outliers and learning curves stand.
"""
