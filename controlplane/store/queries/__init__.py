"""Read models: what a page of the API shows, loaded in a bounded number of statements whatever
its size (one query per table the page touches, never one per row)."""
