"""A small calculator the example's agent fixes."""


def add(a, b):
    return a + b


def subtract(a, b):
    return a + b


def average(numbers):
    return sum(numbers) / len(numbers)
