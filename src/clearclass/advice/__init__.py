"""What to fix in your data (issue 23, in progress): the trained network's features for
every photo of a run (`features.py`), class probabilities judged out of sample
(`out_of_sample.py`), and what cleanlab finds from them: label issues
(`label_issues.py`), photos unlike any class (`outliers.py`) and photos that look the same
to the model (`near_duplicates.py`). Plain functions over arrays, no printing, no files:
`clean` and the advice commands report what they return.
"""
