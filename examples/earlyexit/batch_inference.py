"""Early-exit inference over a Ray dataset in parallel Ray tasks (committed MNIST model).

    python examples/earlyexit/batch_inference.py
"""

from mixfleet.earlyexit.batch import batch_predict, images_dataset
from mixfleet.earlyexit.data import load_dataset
from mixfleet.platform.bootstrap import connect


def main() -> dict:
    connect(num_cpus=2)
    test = load_dataset("mnist", seed=0).test
    _, report = batch_predict(images_dataset(test.x, test.y), actors=1, batch_size=250)
    print(f"{report.samples} images; exit rates {[round(r, 3) for r in report.exit_rates]}; "
          f"compute saved {100 * report.compute_saved:.1f}%; accuracy {100 * report.accuracy:.2f}%")
    return report.to_dict()


if __name__ == "__main__":
    main()
