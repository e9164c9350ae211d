"""The Django admin for operators."""
