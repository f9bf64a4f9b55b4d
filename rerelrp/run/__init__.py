"""Running learners over task sequences: the learn -> evaluate -> save loop, metrics, comparisons, jobs."""
