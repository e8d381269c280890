"""``peftlab submission``: one archive to check and reproduce a paper (submission)."""
