"""kubediffusers operator: reconciles InferencePipeline resources."""
