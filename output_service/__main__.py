"""`python -m output_service` behaves exactly like the `output-service` script."""

from output_service.cli import main

raise SystemExit(main())
