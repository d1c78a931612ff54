"""Reduce-side join of two inputs: customers and orders, on the customer id.

Inputs are CSV-like text files; a file whose name starts with ``customers``
holds ``id,name`` lines, one starting with ``orders`` holds
``order_id,customer_id,amount`` lines. The output is one line per order:
``customer_id<TAB>[name, order_id, amount]``. :func:`make_inputs` writes a
small pair of such files.

    mixfleet mapreduce run examples/mapreduce/join.py:Join \
        --input /tmp/join/customers.csv --input /tmp/join/orders.csv --output /tmp/joined
"""

import os
import random

from mixfleet.mapreduce import Job


class Join(Job):
    def mapper(self, _, line):
        source = os.path.basename(self.input_file or "")
        fields = line.split(",")
        if source.startswith("customers"):
            yield fields[0], ("C", fields[1])
        elif source.startswith("orders"):
            yield fields[1], ("O", fields[0], float(fields[2]))

    def reducer(self, customer, tagged):
        names = [t[1] for t in tagged if t[0] == "C"]
        orders = sorted((t[1], t[2]) for t in tagged if t[0] == "O")
        for name in names:
            for order_id, amount in orders:
                yield customer, [name, order_id, amount]


def make_inputs(folder: str, customers: int = 200, orders: int = 2000, seed: int = 0) -> list[str]:
    """Write ``customers.csv`` and ``orders.csv`` under ``folder``; returns their paths."""
    rng = random.Random(seed)
    os.makedirs(folder, exist_ok=True)
    cpath, opath = os.path.join(folder, "customers.csv"), os.path.join(folder, "orders.csv")
    with open(cpath, "w") as f:
        for i in range(customers):
            f.write(f"c{i:05d},name{i}\n")
    with open(opath, "w") as f:
        for j in range(orders):  # some orders point at unknown customers (inner join drops them)
            f.write(f"o{j:06d},c{rng.randrange(int(customers * 1.1)):05d},{rng.randrange(1, 10000) / 100}\n")
    return [cpath, opath]
