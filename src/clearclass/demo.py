"""`clearclass demo`: the whole workflow, offline, on the bundled sample of dog photos."""

from __future__ import annotations

import random
from pathlib import Path

from clearclass.progress import say

# 240 photos of 10 dog breeds from Imagewoof, shipped with the package (SOURCE.md there).
SAMPLE_PHOTOS = Path(__file__).parent / "demo_photos"


def run_demo(out: str | Path = "clearclass-demo") -> Path:
    """Explore, train, evaluate, export and predict on the sample; returns the report path.

    What `clearclass demo` runs (its example is tested there).
    """
    from clearclass.evaluation import evaluate
    from clearclass.exploration import explore, print_report
    from clearclass.export import export_onnx
    from clearclass.predict import load
    from clearclass.training import train

    out = Path(out)
    say(f"1/5 Exploring the sample ({SAMPLE_PHOTOS})")
    print_report(explore(SAMPLE_PHOTOS, out=out / "explore", item_resize=224))

    say("\n2/5 Fine-tuning efficientnet_lite0: one epoch frozen, one unfrozen")
    run = train(SAMPLE_PHOTOS, out=out / "run", model="efficientnet_lite0", epochs=1,
                freeze_epochs=1, item_resize=224, batch_size=16, overwrite=True)

    say("\n3/5 Evaluating on the validation photos")
    evaluation = evaluate(run.run_dir)
    say(evaluation.summary())

    say("\n4/5 Exporting to ONNX")
    onnx_path = export_onnx(run.model_dir)
    say(f"Wrote {onnx_path} (checked against PyTorch)")

    say("\n5/5 Predicting three validation photos")
    classifier = load(run.model_dir)
    photos = random.Random(0).sample(evaluation.paths, 3)
    names = dict(zip(classifier.info.class_ids, classifier.info.class_names))
    for prediction in classifier.predict_many(photos, top_k=3):
        actual = names[Path(prediction.image).parent.name]
        say(f"  {Path(prediction.image).name} (true class {actual}): predicted "
            f"{prediction.class_name} {prediction.probability:.0%}")

    report = evaluation.report_dir / "index.html"
    say(f"\nDone. Report: {report}")
    return report
