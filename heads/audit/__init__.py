"""`audit`: the dataset seen through its cache: out-of-fold probabilities (`folds`), likely label
errors (`labels`, cleanlab), and the files `audit` writes (`run`)."""
