"""The procedural face generator: the offline default face set (FACS action units drawn as faces).

- `faces.py`: which action units make each emotion, children's proportions and poses;
  `generate_faces` returns a `vae.faceset.FaceSet`, one more source for `vae.store`;
- `drawing.py`: the face as shapes (head, hair, brows, eyes, nose, mouth) from action units;
- `raster.py`: exactly rounded, CPU-independent rasterising, so a store hashes the same anywhere.

Nothing else in the platform knows a face was drawn here: models, sessions and analysis read the
store. It never imports the model, training or anything in `mcmcp` or `analysis`.
"""
