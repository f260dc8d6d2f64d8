"""Long-horizon forecasters (DLinear, PatchTST) and the PIR revision layer.

``data``     ETTh1-layout CSV loader, standard split/scaling, windows; Victoria demand; generated series
``dlinear``  DLinear (Zeng et al., AAAI 2023)
``patchtst`` PatchTST (Nie et al., ICLR 2023)
``pir``      PIR (Liu et al., NeurIPS 2025): identification + local/global revision
``train``    seeded training loops with early stopping, evaluation, PIR arrays
``export``   ONNX export (backbone and PIR) with parity checks; the service bundle
``cli``      `recast forecast train|export` (the runtime CLI forwards these here)
"""
