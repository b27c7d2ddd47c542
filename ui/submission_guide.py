"""The Submit tab's step-by-step guide (Markdown); docs/submitting.md has the long form."""

SUBMISSION_GUIDE = """
**A prediction file** (self-reported)

1. Download the test crops (the button below) and unzip them: 3,679 PNGs named by an opaque
   test-crop id (`<image_id>.png`), the AMi-Br test crops and both hidden sets mixed.
2. Run your model on every crop. With a checkpoint in this project's format, one command
   writes the file: `python -m models.predict --checkpoint MY_MODEL --format submission
   test_crops/ > predictions.csv` (or `python -m evaluation.run_checkpoint MY_MODEL
   --predictions-out predictions.csv`). The *Many crops* box of the Classify tab also offers
   its answers as a prediction file.
3. The file is a CSV with the header `image_id,prob_atypical` (optionally `,label` with
   `atypical`/`normal`; without it a crop is called atypical when `prob_atypical >= 0.5`),
   one row per crop: the template below has every id.
4. Check it locally: `python -m evaluation.score predictions.csv` scores the AMi-Br test
   crops, whose labels are public, and reports any problem with the file.
5. Fill in the form (the model name is required) and press *Submit predictions*.

**A checkpoint** (verified)

1. Save your model in the checkpoint format (`config.json` + `model.safetensors`, or a LoRA
   adapter on a registered backbone; docs/submitting.md has the recipe) and zip it.
2. Upload the zip and press *Submit checkpoint*: the server checks it at once, then runs it
   on every test crop (progress shows in *My submissions* and in the queue).
   Or, with the checkpoint in a Hub model repo, give its id and revision under *…or a
   checkpoint on the Hugging Face Hub* and press *Submit Hub model*: the entry records the
   commit the revision pointed at.
3. Once the server has run it, the checkpoint is public: anyone can choose it in the Classify
   tab's model menu (as `<model name> (#<entry>)`) until it is withdrawn or taken down.

Hidden-split scores come back rounded to 0.01, and only when the hidden mean is at least 0.01
above your best released one: repeated submissions cannot read the labels.
"""
