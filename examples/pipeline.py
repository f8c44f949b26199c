"""The whole consortium in one process through pprl's library API.

Platforms hand in pandas DataFrames, the bureau links and aggregates, the
authority decrypts; the result comes back as a DataFrame. No subprocess, no
CLI: this is how a data pipeline would call pprl. Each party's files go into
its own sub-directory of a temporary directory, as they would on its own
machine.

Run:  python examples/pipeline.py [--people 300] [--keep DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd

import pprl

SCHEMA = Path(__file__).resolve().parent / "schema-cn.json"


def run(workdir: Path, people: int) -> pd.DataFrame:
    population = pprl.generate_population(people, 3, seed=11)
    names = sorted(population.platforms)

    keys = {}
    for name, role in [*[(n, "platform") for n in names], ("bureau", "bureau"), ("authority", "authority")]:
        key_path, _ = pprl.init_party(name, role, workdir / "keys")
        keys[name] = pprl.load_key(key_path)
    cards = {name: key.card for name, key in keys.items()}

    shares = [
        pprl.share_secret(keys[n], [cards[p] for p in names if p != n], workdir / n / "share.json") for n in names
    ]
    secrets = {n: pprl.combine_secrets(keys[n], shares, workdir / n / "linkage.secret") for n in names}
    keygen = pprl.paillier_keygen(keys["authority"], 2048, workdir / "authority")

    submissions = [
        pprl.submit(
            keys[n],
            SCHEMA,
            secrets[n],
            population.platforms[n],  # a DataFrame straight from the platform's warehouse
            "user_id",
            workdir / n / "submission.json",
            paillier=keygen.public_path,
            authority=cards["authority"],  # pin who signed the key (its fingerprint checked out of band)
            scores=["repay_score", "spend_score", "travel_score"],
        ).path
        for n in names
    ]
    linkage = pprl.link(keys["bureau"], [cards[n] for n in names], submissions, 0.8, workdir / "bureau" / "linkage.json")
    release = pprl.aggregate(keys["bureau"], linkage.path, submissions, 2, workdir / "bureau" / "release.json",
                             cards=[cards[n] for n in names])
    result = pprl.decrypt_release(
        keys["authority"], keygen.private_path, release.path,
        workdir / "authority" / "audit.log", workdir / "authority" / "aggregates.csv",
        cards=[cards["bureau"]],
        # the authority recomputes the release from the signed linkage and submissions before decrypting
        evidence=pprl.release_evidence(linkage.path, submissions, [cards[n] for n in names]),
    )
    pprl.verify_log(workdir / "authority" / "audit.log", [cards["authority"]])
    return pd.read_csv(result.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=300)
    parser.add_argument("--keep", type=Path, help="keep the parties' files in this directory")
    args = parser.parse_args()
    if args.keep:
        frame = run(args.keep, args.people)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            frame = run(Path(tmp), args.people)
    print(f"released aggregates for {len(frame)} people linked across platforms")
    print(frame.head(10).to_string(index=False))


if __name__ == "__main__":
    main()
